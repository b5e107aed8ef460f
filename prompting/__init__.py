"""How to ask: prompt templates, chains, AMA, Embroid, Evaporate (floor 2)."""
