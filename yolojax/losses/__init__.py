"""yolojax.losses"""
