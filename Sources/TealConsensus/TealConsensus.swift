// TealConsensus: the Raft shell actor (RaftCore + storage + transport).
