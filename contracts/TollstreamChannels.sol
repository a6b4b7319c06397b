// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

/// @notice The EIP-3009 function the registry pulls gasless deposits with.
interface IERC3009 {
    function receiveWithAuthorization(
        address from,
        address to,
        uint256 value,
        uint256 validAfter,
        uint256 validBefore,
        bytes32 nonce,
        uint8 v,
        bytes32 r,
        bytes32 s
    ) external;
}

/// @title Tollstream payment channels
/// @notice One registry holds every channel. A client deposits native coin or
/// an ERC-20 token for a payee and names a signer (a session key); the payee
/// closes the channel with the latest EIP-712 `ChannelState` the signer
/// signed and is paid its balance, the client gets the rest. A channel nobody
/// closed before `expiresAt` can be refunded to the client in full.
/// @dev Storage is two slots per channel (three for a token channel), the
/// least that lets `refund(bytes32)` -- whose signature version-1 clients
/// rely on -- pay out from the id alone: it needs the client, the deposit,
/// the expiry and the token. Payee and signer are only checked by closes, so
/// they are kept as a 160-bit commitment (`terms`), and a close recovers the
/// signer from the state's signature and takes the payee from `msg.sender`.
contract TollstreamChannels is ReentrancyGuardTransient {
    using SafeERC20 for IERC20;

    enum Status {
        None,
        Open,
        Closed,
        Refunded
    }

    /// @dev slot 0: client (160) | expiresAt (64) | status (8) | isToken (8)
    /// slot 1: deposit (96) | terms (160)
    /// `terms` is the first 20 bytes of keccak256(abi.encode(payee, signer)).
    /// A token channel's token is in `_tokens`. A uint96 deposit is ~7.9e28
    /// token units, far above any real channel.
    struct Channel {
        address client;
        uint64 expiresAt;
        Status status;
        bool isToken;
        uint96 deposit;
        bytes20 terms;
    }

    /// @notice One close of `closeMany`: the channel and the signed state's
    /// server balance (token units), sequence number and 65-byte signature.
    struct Close {
        bytes32 channelId;
        uint256 serverBalance;
        uint64 sequenceNumber;
        bytes signature;
    }

    mapping(bytes32 => Channel) private _channels;
    mapping(bytes32 => address) private _tokens;

    /// @notice Amounts (token units; token 0 is the native coin) owed to
    /// clients whose payout failed -- a contract wallet that refuses the coin,
    /// a token that blocks the address -- so such a client cannot stop the
    /// payee's close. `withdraw` pays them out.
    mapping(address client => mapping(address token => uint256)) public owed;

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant STATE_TYPEHASH = keccak256(
        "ChannelState(bytes32 channelId,uint256 clientBalance,uint256 serverBalance,uint64 sequenceNumber,bool isFinal)"
    );
    bytes32 private constant NAME_HASH = keccak256("Tollstream");
    bytes32 private constant VERSION_HASH = keccak256("1");
    /// @dev secp256k1n / 2: signatures with a larger `s` are malleable copies.
    uint256 private constant HALF_N = 0x7fffffffffffffffffffffffffffffff5d576e7357a4501ddfe92f46681b20a0;
    /// @dev Gas forwarded with a coin transfer to a client: enough for a smart
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
    /// @notice An entry of `closeMany` that did not close; `reason` is the
    /// selector of the error `close` would have reverted with. The id is not
    /// indexed: only `Opened`, `Closed` and `Refunded` index a channel id.
    event CloseSkipped(bytes32 channelId, bytes4 reason);

    error ChannelIdUsed();
    error ZeroDeposit();
    error DepositTooLarge();
    error ZeroAddress();
    error AlreadyExpired();
    error ChannelNotOpen();
    error ChannelExpired();
    error ChannelNotExpired();
    error BalanceExceedsDeposit();
    error InvalidSignature();
    /// @notice The caller is not the channel's payee, or the state is signed
    /// by a key other than the channel's signer.
    error TermsMismatch();
    error NothingOwed();
    error TransferFailed();
    /// @notice Token channels need an ERC-20 contract; use `open` for the
    /// native coin.
    error NotAToken();
    /// @notice The registry received less than the deposit (fee-on-transfer
    /// and rebasing tokens are not supported).
    error DepositShortfall(uint256 received, uint256 expected);
    /// @notice The permit failed and the allowance does not cover the deposit.
    error PermitFailed();

    constructor() {
        cachedChainId = block.chainid;
        cachedDomainSeparator = _buildDomainSeparator();
    }

    // ---------------------------------------------------------------- opens

    /// @notice Opens a channel funded with `msg.value` (wei) for `payee`, whose
    /// states are signed by `signer`, refundable from `expiresAt` (unix
    /// seconds, block time). Version 1, unchanged.
    /// @return channelId keccak256(abi.encode(msg.sender, payee, salt)).
    function open(address payee, address signer, uint64 expiresAt, bytes32 salt)
        external
        payable
        returns (bytes32 channelId)
    {
        channelId = _record(msg.sender, address(0), msg.value, payee, signer, expiresAt, salt);
    }

    /// @notice Opens a channel holding `amount` of `token` (its smallest unit),
    /// pulled from the caller with `transferFrom`; the caller approved the
    /// registry first.
    /// @return channelId keccak256(abi.encode(msg.sender, payee, salt)).
    function openToken(address token, uint256 amount, address payee, address signer, uint64 expiresAt, bytes32 salt)
        external
        nonReentrant
        returns (bytes32 channelId)
    {
        channelId = _record(msg.sender, _tokenOrRevert(token), amount, payee, signer, expiresAt, salt);
        _pull(token, msg.sender, amount);
    }

    /// @notice `openToken` in one transaction with the caller's EIP-2612
    /// permit (owner = caller, spender = registry, value = `amount`). A permit
    /// that fails (someone submitted it first) is ignored when the allowance
    /// already covers `amount`.
    function openWithPermit(
        address token,
        uint256 amount,
        address payee,
        address signer,
        uint64 expiresAt,
        bytes32 salt,
        uint256 deadline,
        bytes calldata permitSignature
    ) external nonReentrant returns (bytes32 channelId) {
        channelId = _record(msg.sender, _tokenOrRevert(token), amount, payee, signer, expiresAt, salt);
        (uint8 v, bytes32 r, bytes32 s) = _split(permitSignature);
        try IERC20Permit(token).permit(msg.sender, address(this), amount, deadline, v, r, s) {}
        catch {
            if (IERC20(token).allowance(msg.sender, address(this)) < amount) revert PermitFailed();
        }
        _pull(token, msg.sender, amount);
    }

    /// @notice Opens a channel for `client` with its EIP-3009
    /// `ReceiveWithAuthorization` of `amount` to this registry; anyone may
    /// send it. The authorization's nonce must be
    /// keccak256(abi.encode(payee, signer, expiresAt, salt)), so it is good
    /// for this channel's terms only.
    /// @return channelId keccak256(abi.encode(client, payee, salt)).
    function openWithAuthorization(
        address token,
        address client,
        uint256 amount,
        address payee,
        address signer,
        uint64 expiresAt,
        bytes32 salt,
        uint256 validAfter,
        uint256 validBefore,
        bytes calldata signature
    ) external nonReentrant returns (bytes32 channelId) {
        channelId = _record(client, _tokenOrRevert(token), amount, payee, signer, expiresAt, salt);
        bytes32 nonce = keccak256(abi.encode(payee, signer, expiresAt, salt));
        (uint8 v, bytes32 r, bytes32 s) = _split(signature);
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC3009(token).receiveWithAuthorization(
            client, address(this), amount, validAfter, validBefore, nonce, v, r, s
        );
        _checkReceived(token, before, amount);
    }

    // ---------------------------------------------------------------- closes

    /// @notice Closes an open channel with the signer's `ChannelState` whose
    /// server balance is `serverBalance`; payee only, before expiry. Pays
    /// `serverBalance` to the payee and the rest of the deposit to the client,
    /// in the channel's token.
    function close(bytes32 channelId, uint256 serverBalance, uint64 sequenceNumber, bytes calldata signature)
        external
        nonReentrant
    {
        (bytes4 refusal, address client, address token, uint256 clientBalance) =
            _settle(channelId, serverBalance, sequenceNumber, signature);
        if (refusal != bytes4(0)) {
            assembly ("memory-safe") {
                mstore(0, refusal)
                revert(0, 4)
            }
        }
        if (serverBalance > 0) _payPayee(token, serverBalance);
        if (clientBalance > 0) _payClient(token, client, clientBalance);
    }

    /// @notice Closes many channels of the caller in one transaction. An entry
    /// that cannot close (not open, not the caller's, expired, a balance above
    /// the deposit, a bad signature) is skipped with `CloseSkipped`; every
    /// channel closed emits its own `Closed`. The payee is paid once per run of
    /// entries in the same token.
    /// @return closed How many entries closed.
    function closeMany(Close[] calldata closes) external nonReentrant returns (uint256 closed) {
        address runToken;
        uint256 runTotal;
        for (uint256 i; i < closes.length; ++i) {
            Close calldata entry = closes[i];
            (bytes4 refusal, address client, address token, uint256 clientBalance) =
                _settle(entry.channelId, entry.serverBalance, entry.sequenceNumber, entry.signature);
            if (refusal != bytes4(0)) {
                emit CloseSkipped(entry.channelId, refusal);
                continue;
            }
            ++closed;
            if (token != runToken) {
                if (runTotal > 0) _payPayee(runToken, runTotal);
                (runToken, runTotal) = (token, 0);
            }
            runTotal += entry.serverBalance;
            if (clientBalance > 0) _payClient(token, client, clientBalance);
        }
        if (runTotal > 0) _payPayee(runToken, runTotal);
    }

    /// @notice Returns the whole deposit of a channel that was never closed to
    /// its client, in its token, once `expiresAt` has passed. Anyone may call
    /// it. Version 1, unchanged.
    function refund(bytes32 channelId) external nonReentrant {
        Channel storage channel = _channels[channelId];
        if (channel.status != Status.Open) revert ChannelNotOpen();
        if (block.timestamp < channel.expiresAt) revert ChannelNotExpired();
        channel.status = Status.Refunded;
        uint256 amount = channel.deposit;
        address token = channel.isToken ? _tokens[channelId] : address(0);
        emit Refunded(channelId, amount);
        _payClient(token, channel.client, amount);
    }

    /// @notice Pays out what failed payouts left owed to the caller in `token`
    /// (0 for the native coin).
    function withdraw(address token) external nonReentrant {
        uint256 amount = owed[msg.sender][token];
        if (amount == 0) revert NothingOwed();
        owed[msg.sender][token] = 0;
        if (token == address(0)) {
            (bool paid,) = msg.sender.call{value: amount}("");
            if (!paid) revert TransferFailed();
        } else {
            IERC20(token).safeTransfer(msg.sender, amount);
        }
    }

    // ---------------------------------------------------------------- views

    /// @notice A channel as stored: `token` is 0 for the native coin, `terms`
    /// the first 20 bytes of keccak256(abi.encode(payee, signer)) (see
    /// `termsOf`); every field is zero for an id never used.
    function channels(bytes32 channelId)
        external
        view
        returns (
            address client,
            uint64 expiresAt,
            Status status,
            address token,
            uint256 deposit,
            bytes20 terms
        )
    {
        Channel storage channel = _channels[channelId];
        return (
            channel.client,
            channel.expiresAt,
            channel.status,
            channel.isToken ? _tokens[channelId] : address(0),
            channel.deposit,
            channel.terms
        );
    }

    /// @notice The commitment a channel keeps to its payee and signer.
    function termsOf(address payee, address signer) public pure returns (bytes20) {
        return bytes20(keccak256(abi.encode(payee, signer)));
    }

    /// @notice The EIP-712 domain separator of this contract on this chain.
    function domainSeparator() external view returns (bytes32) {
        return _domainSeparator();
    }

    // ---------------------------------------------------------------- internals

    /// @dev Checks an open's terms and stores the channel; the deposit is
    /// pulled by the caller afterwards (checks, effects, interactions).
    function _record(
        address client,
        address token,
        uint256 amount,
        address payee,
        address signer,
        uint64 expiresAt,
        bytes32 salt
    ) private returns (bytes32 channelId) {
        if (amount == 0) revert ZeroDeposit();
        if (amount > type(uint96).max) revert DepositTooLarge();
        if (payee == address(0) || signer == address(0) || client == address(0)) revert ZeroAddress();
        if (expiresAt <= block.timestamp) revert AlreadyExpired();
        channelId = keccak256(abi.encode(client, payee, salt));
        Channel storage channel = _channels[channelId];
        if (channel.status != Status.None) revert ChannelIdUsed();
        bool isToken = token != address(0);
        _channels[channelId] = Channel({
            client: client,
            expiresAt: expiresAt,
            status: Status.Open,
            isToken: isToken,
            deposit: uint96(amount),
            terms: termsOf(payee, signer)
        });
        if (isToken) _tokens[channelId] = token;
        emit Opened(channelId, client, payee, signer, amount, expiresAt);
    }

    /// @dev Verifies one close and marks the channel closed. Returns the
    /// selector of the refusal instead of reverting, so `closeMany` can skip.
    function _settle(bytes32 channelId, uint256 serverBalance, uint64 sequenceNumber, bytes calldata signature)
        private
        returns (bytes4 refusal, address client, address token, uint256 clientBalance)
    {
        Channel storage channel = _channels[channelId];
        if (channel.status != Status.Open) return (ChannelNotOpen.selector, address(0), address(0), 0);
        if (block.timestamp >= channel.expiresAt) return (ChannelExpired.selector, address(0), address(0), 0);
        uint256 deposit = channel.deposit;
        if (serverBalance > deposit) return (BalanceExceedsDeposit.selector, address(0), address(0), 0);
        clientBalance = deposit - serverBalance;
        bytes32 structHash = keccak256(
            abi.encode(STATE_TYPEHASH, channelId, clientBalance, serverBalance, sequenceNumber, clientBalance == 0)
        );
        address signer = _recover(keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash)), signature);
        if (signer == address(0)) return (InvalidSignature.selector, address(0), address(0), 0);
        if (termsOf(msg.sender, signer) != channel.terms) return (TermsMismatch.selector, address(0), address(0), 0);
        channel.status = Status.Closed;
        client = channel.client;
        token = channel.isToken ? _tokens[channelId] : address(0);
        emit Closed(channelId, serverBalance, clientBalance);
    }

    function _tokenOrRevert(address token) private view returns (address) {
        if (token == address(0) || token.code.length == 0) revert NotAToken();
        return token;
    }

    /// @dev Pulls `amount` of `token` from `from`, refusing tokens that deliver
    /// less (fee on transfer).
    function _pull(address token, address from, uint256 amount) private {
        uint256 before = IERC20(token).balanceOf(address(this));
        IERC20(token).safeTransferFrom(from, address(this), amount);
        _checkReceived(token, before, amount);
    }

    function _checkReceived(address token, uint256 before, uint256 amount) private view {
        uint256 received = IERC20(token).balanceOf(address(this)) - before;
        if (received != amount) revert DepositShortfall(received, amount);
    }

    /// @dev The payee's own payout: a failure is the payee's to fix, so it
    /// reverts the close.
    function _payPayee(address token, uint256 amount) private {
        if (token == address(0)) {
            (bool paid,) = msg.sender.call{value: amount}("");
            if (!paid) revert TransferFailed();
        } else {
            IERC20(token).safeTransfer(msg.sender, amount);
        }
    }

    /// @dev A client's payout never reverts: what cannot be paid is owed.
    function _payClient(address token, address client, uint256 amount) private {
        bool paid;
        if (token == address(0)) {
            (paid,) = client.call{value: amount, gas: CLIENT_TRANSFER_GAS}("");
        } else {
            paid = IERC20(token).trySafeTransfer(client, amount);
        }
        if (!paid) owed[client][token] += amount;
    }

    function _domainSeparator() private view returns (bytes32) {
        // Recomputed only after a chain fork changed the id.
        return block.chainid == cachedChainId ? cachedDomainSeparator : _buildDomainSeparator();
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    /// @dev Splits a 65-byte `r ‖ s ‖ v`; any other length gives v = 0, which
    /// every verifier refuses.
    function _split(bytes calldata signature) private pure returns (uint8 v, bytes32 r, bytes32 s) {
        if (signature.length != 65) return (0, 0, 0);
        r = bytes32(signature[0:32]);
        s = bytes32(signature[32:64]);
        v = uint8(signature[64]);
    }

    /// @dev Accepts only 65-byte `r ‖ s ‖ v` signatures with v in {27, 28} and
    /// a low `s`, as the protocol specifies; anything else recovers to zero.
    function _recover(bytes32 digest, bytes calldata signature) private pure returns (address) {
        (uint8 v, bytes32 r, bytes32 s) = _split(signature);
        if (uint256(s) > HALF_N || (v != 27 && v != 28)) return address(0);
        return ecrecover(digest, v, r, s);
    }
}
