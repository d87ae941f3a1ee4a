//! ccu-channels
