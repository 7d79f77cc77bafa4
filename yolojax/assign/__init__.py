"""yolojax.assign"""
