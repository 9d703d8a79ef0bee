// TealMembership: the SWIM shell actor over the peer transport.
