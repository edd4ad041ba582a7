"""Files we own: atomic writes and ownership, the snippet and password file, state files, the
lock.
"""
