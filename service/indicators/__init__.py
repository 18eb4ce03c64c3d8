"""Partnership success indicators: catalogue (data), periods and disclosure control."""
