"""What the LLM can reach beyond its own words: the `web_search` tool (`search`: Tavily
with its key, else the local knowledge base), the knowledge base itself (`knowledge`, over
the Markdown files in bot/knowledge/), worked arithmetic for spoken sums (`calculator`), and
no filler over a preamble the model spoke before a tool call (`tool_preamble`).
`bot/providers.py` chooses which of them a session gets."""
