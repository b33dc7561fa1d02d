//! Diff of two configs and the impact of each change (filled in by the reload work).
