"""edgeopt.optimizer"""
