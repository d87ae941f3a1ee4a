//! ccu-routing
