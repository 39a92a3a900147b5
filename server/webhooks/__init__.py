"""Webhooks: a job's outcome POSTed to the ``webhook_url`` its request gave, instead of polling.

``settings`` the operator's flags; ``allow_rules`` which URLs may be called at all (and the SSRF
checks); ``signing`` the Standard Webhooks signature; ``payload`` the envelope; ``sender`` one POST;
``deliverer`` the threads that work through the store's due webhooks with retries. See
docs/server.md, Webhooks.
"""
