"""Start Pipecat's own development runner with our bot: `python -m bot.devrunner -t webrtc`."""

from pipecat.runner.run import main

if __name__ == "__main__":
    main()
