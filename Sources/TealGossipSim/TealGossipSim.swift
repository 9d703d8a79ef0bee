// TealGossipSim: deterministic simulation of SWIMCore clusters.
