"""What the policy tools compute from files and the decision store: what-if replays, risk
cards, parity."""
