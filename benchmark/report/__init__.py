"""Report stage: leaderboards (``leaderboard``), the paper-style tables (``tables``) and figures
(``figures``), export formats (``formats``), run comparison (``compare``) and paired statistics
(``paired``)."""
