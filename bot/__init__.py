"""The voice agent: configuration, providers, the pipeline and the CLI.

`bot(runner_args)` is the entry Pipecat's development runner and Pipecat Cloud look
for (they `import bot` and call it once per session); see `bot.runner_entry`.
"""


async def bot(runner_args):
    from bot.runner_entry import run_session

    await run_session(runner_args)
