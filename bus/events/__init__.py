"""Events: the CloudEvent (parse, validate, size, redact), the vocabulary every
layer shares (outcomes, task kinds, statuses, job payloads), and the text and
time helpers that shape event data. Imports only the foundation (`hookbus.bus`'s
own modules).
"""
