"""yolojax.train"""
