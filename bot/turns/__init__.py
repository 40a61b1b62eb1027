"""The user's side of turn taking: when a turn starts, when it ends, what talk over the bot
means. `turn_taking` builds one session's user-turn strategies from the settings; the parts:
the VAD whose bar follows the room (`adaptive_vad`); barge-ins judged by their words
(`barge_in`, acting on the verdicts of `barge_in_words`; `backchannel_filter` keeps
backchannels and echo from becoming turns); turn ends checked against the words and this
speaker's pauses (`turn_end`, with `speech_pause` for pauses heard in the audio and
`speculation` for answers started early); the check-in on a quiet user (`idle`)."""
