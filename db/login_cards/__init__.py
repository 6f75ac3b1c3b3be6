"""Login cards for young pupils: the signed codes, the printed cards, and signing in with one."""
