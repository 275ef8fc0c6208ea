//! cms-sim
