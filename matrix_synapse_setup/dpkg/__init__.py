"""Debian's machinery: the debconf conversation, ucf, dpkg-query and triggers."""
