"""L3: the engine, flows as generators of steps (submit, poll, download) and the rules that decide what a user
pays for (quotes, budget verdicts, replay, pacing). Drivers in _runtime run the steps.
"""
