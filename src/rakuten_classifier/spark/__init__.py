"""Spark (the ``spark`` extra): batch scoring and training's image features spread over a cluster (docs/scale.md).

The only package that imports pyspark; the command line reaches it lazily, nothing else imports it.
"""
