"""edgeopt.control"""
