"""edgeopt.storage"""
