"""yolojax.convert"""
