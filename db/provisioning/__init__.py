"""Provisioning: a school's identity provider keeps its users and classes up to date (over SCIM).

What the provider may see and change is decided by provenance (`provenance.py`): it manages what it created,
and everything else does not exist for it. Its changes to users are in `users.py`, to classes in `classes.py`;
each goes through the same domain functions as an admin's own change, so the same rules hold and the same
audit events are written, with the provider's token as the actor.
"""
