"""Tracking: a run's metrics sent, as they are logged, to TensorBoard (and replayed later
with `inflame runs sync` when a tracker failed or came later). A tracker's failure never
stops the run: the tracker is dropped, the run goes on, and the manifest says so."""
