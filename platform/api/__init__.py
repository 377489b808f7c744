"""The contract with users: the TrainingJob API (`types`), its CRD, reasons and manifest files.

Pure pydantic and the standard library; no I/O beyond reading the manifest files a user names.
Everything else in carina.platform stands on this room.
"""
