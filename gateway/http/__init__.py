"""What every HTTP surface shares: the error shape and its middleware, JSON input checks, bearer
keys and the key-guessing limit.
"""
