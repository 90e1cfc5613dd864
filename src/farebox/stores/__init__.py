"""State: Protocols in ``base``, implementations beside it."""
