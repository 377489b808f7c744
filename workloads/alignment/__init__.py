"""Alignment data: instruction and safety examples rendered as text with one chat template.

Aurora-M's second stage of continual pretraining mixes instructions and safety data into the
general mixture; these are the sources for that stage (`DataSource` kinds `instructions` and
`safety`) and the held-out prompts its safety evaluation reads.
"""
