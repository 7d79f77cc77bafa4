"""yolojax.models"""
