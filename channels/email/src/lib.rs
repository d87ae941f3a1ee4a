//! ccu-email: the e-mail channel (work in progress).
