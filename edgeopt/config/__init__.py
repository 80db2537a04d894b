"""edgeopt.config"""
