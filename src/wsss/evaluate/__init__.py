"""wsss.evaluate"""
