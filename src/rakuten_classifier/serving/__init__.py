"""Everything the BentoML services in service.py call: hot swap, request schemas, answers, metrics,
auth, the HTTP guard, training jobs (started as processes), the web page. Imports no training code."""
