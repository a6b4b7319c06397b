// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

/// @title Tollstream payment channels
/// @notice One registry holds every channel. A client deposits native ETH for a
/// payee and names a signer (a session key); the payee closes the channel with
/// the latest EIP-712 `ChannelState` the signer signed and is paid its balance,
/// the client gets the rest. A channel nobody closed before `expiresAt` can be
/// refunded to the client in full.
/// @dev Storage is packed into three slots per channel (see `Channel`): the
/// fields are what `close` and `refund` must check, and nothing else is kept.
contract TollstreamChannels {
    enum Status {
        None,
        Open,
        Closed,
        Refunded
    }

    /// @dev Layout of `channels(bytes32)`:
    /// slot 0: client (160 bits) | expiresAt (64) | status (8)
    /// slot 1: payee (160) | deposit (96)
    /// slot 2: signer (160)
    /// A uint96 deposit is ~7.9e10 ETH, far above any real channel.
    struct Channel {
        address client;
        uint64 expiresAt;
        Status status;
        address payee;
        uint96 deposit;
        address signer;
    }

    /// @notice Every channel ever opened, by id; closed and refunded ones stay
    /// so an id is never reused.
    mapping(bytes32 => Channel) public channels;

    /// @notice Amounts owed to clients whose wallet refused a plain transfer
    /// (a contract wallet without a payable fallback). Kept here so such a
    /// client cannot block the payee's close; `withdraw` pays them out.
    mapping(address => uint256) public owed;

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant STATE_TYPEHASH = keccak256(
        "ChannelState(bytes32 channelId,uint256 clientBalance,uint256 serverBalance,uint64 sequenceNumber,bool isFinal)"
    );
    bytes32 private constant NAME_HASH = keccak256("Tollstream");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// @dev secp256k1n / 2: signatures with a larger `s` are malleable copies.
    uint256 private constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    /// @dev Gas forwarded with a transfer to a client: enough for a smart
    /// wallet's receive hook, too little to grief the payee's close.
    uint256 private constant CLIENT_TRANSFER_GAS = 50_000;

    uint256 private immutable cachedChainId;
    bytes32 private immutable cachedDomainSeparator;

    event Opened(
        bytes32 indexed channelId,
        address indexed client,
        address indexed payee,
        address signer,
        uint256 deposit,
        uint64 expiresAt
    );
    event Closed(bytes32 indexed channelId, uint256 serverBalance, uint256 clientBalance);
    event Refunded(bytes32 indexed channelId, uint256 amount);

    error ChannelIdUsed();
    error ZeroDeposit();
    error DepositTooLarge();
    error ZeroAddress();
    error AlreadyExpired();
    error ChannelNotOpen();
    error NotPayee();
    error ChannelExpired();
    error ChannelNotExpired();
    error BalanceExceedsDeposit();
    error InvalidSignature();
    error NothingOwed();
    error TransferFailed();

    constructor() {
        cachedChainId = block.chainid;
        cachedDomainSeparator = _buildDomainSeparator();
    }

    /// @notice Opens a channel funded with `msg.value` for `payee`, whose
    /// states are signed by `signer`, refundable from `expiresAt` (unix seconds).
    /// @return channelId keccak256(abi.encode(msg.sender, payee, salt)).
    function open(address payee, address signer, uint64 expiresAt, bytes32 salt)
        external
        payable
        returns (bytes32 channelId)
    {
        if (msg.value == 0) revert ZeroDeposit();
        if (msg.value > type(uint96).max) revert DepositTooLarge();
        if (payee == address(0) || signer == address(0)) revert ZeroAddress();
        if (expiresAt <= block.timestamp) revert AlreadyExpired();
        channelId = keccak256(abi.encode(msg.sender, payee, salt));
        Channel storage channel = channels[channelId];
        if (channel.status != Status.None) revert ChannelIdUsed();
        channel.client = msg.sender;
        channel.expiresAt = expiresAt;
        channel.status = Status.Open;
        channel.payee = payee;
        channel.deposit = uint96(msg.value);
        channel.signer = signer;
        emit Opened(channelId, msg.sender, payee, signer, msg.value, expiresAt);
    }

    /// @notice Closes an open channel with the signer's `ChannelState` whose
    /// server balance is `serverBalance`; payee only, before expiry. Pays
    /// `serverBalance` to the payee and the rest of the deposit to the client.
    function close(bytes32 channelId, uint256 serverBalance, uint64 sequenceNumber, bytes calldata signature)
        external
    {
        Channel storage channel = channels[channelId];
        if (channel.status != Status.Open) revert ChannelNotOpen();
        if (msg.sender != channel.payee) revert NotPayee();
        if (block.timestamp >= channel.expiresAt) revert ChannelExpired();
        uint256 deposit = channel.deposit;
        if (serverBalance > deposit) revert BalanceExceedsDeposit();
        uint256 clientBalance = deposit - serverBalance;
        bytes32 structHash = keccak256(
            abi.encode(STATE_TYPEHASH, channelId, clientBalance, serverBalance, sequenceNumber, clientBalance == 0)
        );
        bytes32 digest = keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash));
        if (_recover(digest, signature) != channel.signer) revert InvalidSignature();

        channel.status = Status.Closed;
        emit Closed(channelId, serverBalance, clientBalance);
        if (serverBalance > 0) {
            (bool paid,) = msg.sender.call{value: serverBalance}("");
            if (!paid) revert TransferFailed();
        }
        if (clientBalance > 0) _payClient(channel.client, clientBalance);
    }

    /// @notice Returns the whole deposit of a channel that was never closed to
    /// its client, once `expiresAt` has passed. Anyone may call it.
    function refund(bytes32 channelId) external {
        Channel storage channel = channels[channelId];
        if (channel.status != Status.Open) revert ChannelNotOpen();
        if (block.timestamp < channel.expiresAt) revert ChannelNotExpired();
        channel.status = Status.Refunded;
        uint256 amount = channel.deposit;
        emit Refunded(channelId, amount);
        _payClient(channel.client, amount);
    }

    /// @notice Pays out what a failed transfer left owed to the caller.
    function withdraw() external {
        uint256 amount = owed[msg.sender];
        if (amount == 0) revert NothingOwed();
        owed[msg.sender] = 0;
        (bool paid,) = msg.sender.call{value: amount}("");
        if (!paid) revert TransferFailed();
    }

    /// @notice The EIP-712 domain separator of this contract on this chain.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparator();
    }

    function _payClient(address client, uint256 amount) private {
        (bool paid,) = client.call{value: amount, gas: CLIENT_TRANSFER_GAS}("");
        if (!paid) owed[client] += amount;
    }

    function _domainSeparator() private view returns (bytes32) {
        // Recomputed only after a chain fork changed the id.
        return block.chainid == cachedChainId ? cachedDomainSeparator : _buildDomainSeparator();
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// @dev Accepts only 65-byte `r ‖ s ‖ v` signatures with v in {27, 28} and
    /// a low `s`, as the protocol specifies; anything else recovers to zero,
    /// which never equals a channel's signer.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        if (signature.length != 65) return address(0);
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }
}
