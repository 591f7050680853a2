"""The provider's answer to the client: a stream event by event, or the whole answer; usage read,
cost written in, every secret taken out.
"""
