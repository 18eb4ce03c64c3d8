"""Toolkits: the definition format (`definition`), published versions (`versions`) and the
demonstration toolkit shipped with the service (`demo`).

Licensed toolkits (such as a partnership's own graded care profile) are never shipped; they are
loaded through the API.
"""
