"""The bed session and alarm engine: pure, deterministic, clock passed in.

``observe``/``tick`` return outputs (alert transitions, actions); they do no I/O and read
no clock, so the daemon (real monotonic clock) and replay (virtual clock) get the same
alerts from the same input.
"""
