"""Remote models: embedserve as a gateway in front of TEI, Infinity, Ollama and OpenAI-compatible servers.

config (what an upstream is) -> balancer (which endpoint, pure logic) -> protocols (each upstream's wire
shapes) -> client (calls with retries, ejection, health checks) -> gateway (all upstreams by name).
"""
