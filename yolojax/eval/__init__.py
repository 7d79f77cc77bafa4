"""yolojax.eval"""
