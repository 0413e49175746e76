"""The decision runtime: observations, power model and policy serving, shared by training and serving."""
