"""One router per resource: `trainingjobs` (and its subresources) and `health`."""
