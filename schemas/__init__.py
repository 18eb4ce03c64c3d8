"""Wire contract: request and response models. Imports neither FastAPI nor the database layer."""
