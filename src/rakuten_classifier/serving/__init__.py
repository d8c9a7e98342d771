"""Everything the BentoML services in service.py call: hot swap, request schemas, answers, metrics,
auth, the HTTP guard, the web page. Imports no training code."""
