// The common client-credentials hook extension, ported line for line from
// its TypeScript to plain JavaScript (no build step), for measurement only.
// Differences from the original: no defineHook wrapper (it returns its
// argument), and the role and the required scope come from the environment
// (BCC_AUTH_ROLE, BCC_AUTH_SCOPE) instead of being written into the code.
import jwksRsa from 'jwks-rsa';
import jwt from 'jsonwebtoken';
import { NIL, v5 } from 'uuid';

export default ({ filter }, { env, services, getSchema }) => {
	const { UsersService } = services;
	const issuer = env['BCC_AUTH_ISSUER'];
	const audience = env['BCC_AUTH_AUDIENCE'];
	const role = env['BCC_AUTH_ROLE'];
	const scope = env['BCC_AUTH_SCOPE'];

	if (!audience || !issuer) throw new Error(`Missing audience or issuer`);
	if (!role || !scope) throw new Error(`Missing role or scope`);

	const algorithms = ['RS256'];

	const JwksClient = jwksRsa({
		cache: true,
		rateLimit: true,
		jwksRequestsPerMinute: 10,
		// Note: the issuer ends with a forward slash.
		jwksUri: `${issuer}.well-known/jwks.json`,
	});

	filter('authenticate', async (accountabilityIn, meta, context) => {
		const { req } = meta;
		if (!req.token) return accountabilityIn;

		const decoded = jwt.decode(req.token, { complete: true });
		if (!decoded?.payload) return accountabilityIn;

		const payload = decoded?.payload;

		// We only support client credentials
		if (payload.gty !== 'client-credentials') return accountabilityIn;
		if (payload.iss !== issuer || payload.aud !== audience) return accountabilityIn;

		try {
			const key = await JwksClient.getSigningKey(decoded.header.kid);

			jwt.verify(req.token, key.getPublicKey(), { audience, issuer, algorithms });
		} catch (err) {
			return accountabilityIn;
		}

		const scopes = payload.scope.split(' ');
		if (!scopes.includes(scope)) return accountabilityIn;

		const { database } = context;
		const schema = await getSchema();
		const usersSvc = new UsersService({ knex: database, schema });

		const identifier = payload.sub;
		const userId = v5(identifier, NIL);

		const user = await usersSvc
			.readOne(userId, {
				fields: ['id', 'role', 'last_access', 'organizations.organization'],
			})
			.catch(() => null);

		const issuedAtDate = payload.iat ? new Date(payload.iat * 1000) : new Date();

		if (!user) {
			await usersSvc.createOne({
				id: userId,
				provider: 'bcc-client-credentials',
				first_name: 'External',
				last_name: 'Client',
				external_identifier: identifier,
				last_access: issuedAtDate.toISOString(),
			});
		} else {
			const updateUser = {};
			// Compares two objects: always true, so every request writes.
			if (new Date(user.last_access) !== issuedAtDate) {
				updateUser.last_access = issuedAtDate.toISOString();
			}

			if (user.role !== role) {
				updateUser.role = role;
			}

			if (Object.keys(updateUser).length > 0) {
				await usersSvc.updateOne(userId, updateUser);
			}
		}

		return Object.assign({}, accountabilityIn, {
			user: userId,
			role: role,
			roles: [role],
		});
	});
};
