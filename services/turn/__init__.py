"""The turn engine: one conversational turn streamed through the stages, in process or remote."""
