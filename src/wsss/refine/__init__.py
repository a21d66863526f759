"""wsss.refine"""
