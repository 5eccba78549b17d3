"""The typer command line and its rich rendering of engine events. No logic lives here."""
