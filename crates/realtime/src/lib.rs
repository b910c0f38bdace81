//! Live monitoring (under construction).
