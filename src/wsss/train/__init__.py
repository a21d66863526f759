"""wsss.train"""
