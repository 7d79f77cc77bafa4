"""yolojax.data"""
